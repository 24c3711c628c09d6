"""`python -m trainables.data.ssl save MODEL PATH`: the pretrained state dict of a data.ssl.model
(torchaudio.pipelines bundle, needs network once) written to PATH for offline sweeps."""

from __future__ import annotations

import argparse
import sys

from trainables.data.ssl.settings import SSL_MODELS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.data.ssl")
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="download a model's weights and save its state dict")
    save.add_argument("model", choices=sorted(SSL_MODELS))
    save.add_argument("path")
    args = parser.parse_args(argv)
    from trainables.data.ssl.encoders import save_pretrained
    from trainables.errors import SersweepError

    try:
        out = save_pretrained(args.model, args.path)
    except SersweepError as exc:  # offline, blocked: one message saying what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {args.model} to {out}; use data.ssl: {{model: {args.model}, checkpoint: {out}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
