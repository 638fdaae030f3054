"""`arbiter github-app manifest`: the App manifest as JSON, for people who create it by hand."""

from __future__ import annotations

import argparse
import json
import sys

from bot.setup.manifest import ManifestError, build_manifest, load_app_definition
from config.settings import Settings

EXIT_USAGE = 2


def add_github_app_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="github_app_action", required=True, metavar="ACTION")
    manifest = actions.add_parser(
        "manifest", help="print the App manifest (app.yml plus this server's URLs) as JSON"
    )
    manifest.add_argument(
        "--public-url", help="where GitHub reaches this server (default: ARBITER_PUBLIC_URL)"
    )


def github_app_command(settings: Settings, args: argparse.Namespace) -> int:
    public_url = args.public_url or settings.public_url
    if public_url and not public_url.startswith(("http://", "https://")):
        print("arbiter: --public-url must start with http:// or https://", file=sys.stderr)
        return EXIT_USAGE
    try:
        manifest = build_manifest(load_app_definition(), public_url=public_url)
    except ManifestError as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    if not public_url:
        print(
            "arbiter: ARBITER_PUBLIC_URL is not set (nor --public-url), so the manifest has no "
            "webhook URL: enter https://YOUR-HOST/webhooks/github on GitHub's form",
            file=sys.stderr,
        )
    return 0
