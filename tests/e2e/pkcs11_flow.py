"""The device CLI on a PKCS#11 token, in a process of its own.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, when the module is first
loaded, so a test that brings its own tokens runs the CLI here rather than in the
pytest process. Prints one JSON array: ``[{"args", "exit_code", "stdout", "stderr"}]``.

Usage: ``python pkcs11_flow.py DATA_DIR SERVER_URL MODULE TOKEN_LABEL INPUT.npy``
(API token in ``$MODELSEAL_API_TOKEN``, user PIN in ``$MODELSEAL_PKCS11_PIN``).
"""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from tests.e2e.cli_entry import cli


def main() -> None:
    data_dir, server, module, label, input_path = sys.argv[1:6]
    common = ["--dir", data_dir]
    token = ["--pkcs11-module", module, "--pkcs11-token", label]
    steps = [
        ["device", "init", "--keystore", "pkcs11", *token, *common, "--json"],
        ["device", "enroll", "--server", server, "--kem", "x25519", *common, "--json"],
        ["device", "enroll", "--server", server, "--kem", "p256", *common, "--json"],
        ["device", "fetch", "--model", "digits", *common, "--json"],
        ["device", "list", *common, "--json"],
        ["device", "run", "--model", "digits", "--input", input_path, *common, "--json"],
    ]
    app = cli()
    runner = CliRunner()
    results = []
    for args in steps:
        result = runner.invoke(app, args)
        results.append(
            {
                "args": args,
                "exit_code": result.exit_code,
                "stdout": result.stdout,
                "stderr": result.stderr,
            }
        )
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
