"""The `vfudissect lua` subcommand: write the Wireshark Lua plugin, or install it for the current user."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .export import lua


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lua", help="generate the Wireshark Lua plugin (vfio_user.lua) from the protocol tables",
        description="Generate the Wireshark 4.0+ Lua plugin from vfudissect's protocol tables: protocols "
                    "`vfucap` (the capture record) and `vfio_user` (the message), with request/response links, "
                    "response times and the same findings as `vfudissect read` as expert info. "
                    "Load it with `tshark -X lua_script:FILE` (add -2 for links to later frames) or install it "
                    "into Wireshark's personal plugin folder with --install.")
    p.add_argument("-o", "--output", metavar="FILE",
                   help=f"where to write the plugin (default {lua.DEFAULT_OUTPUT} in a checkout, else "
                        f"./{lua.PLUGIN_NAME}; - for standard output); its folder must exist")
    p.add_argument("--install", action="store_true",
                   help=f"write it into Wireshark's personal plugin folder ({lua.personal_plugin_dir()}) "
                        "so Wireshark and tshark load it at start-up")
    p.set_defaults(func=cmd_lua)
    return p


def _fail(text: str) -> int:
    sys.stderr.write(f"vfudissect: error: {text}\n")
    return 2


def cmd_lua(args: argparse.Namespace) -> int:
    text = lua.generate()
    if args.install:
        try:
            path = lua.write(lua.personal_plugin_dir() / lua.PLUGIN_NAME, text, make_dirs=True)
        except OSError as exc:
            return _fail(f"cannot install the plugin into {lua.personal_plugin_dir()}: {exc.strerror or exc}")
        sys.stderr.write(f"installed {path}: Wireshark and tshark load it at start-up "
                         f"(check with: tshark -G protocols | grep vfio_user)\n")
        if args.output is None:
            return 0
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    path = Path(args.output) if args.output else lua.default_output()
    if not path.parent.is_dir():
        return _fail(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        lua.write(path, text)
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror or exc}")
    sys.stderr.write(f"wrote {path} ({len(text.splitlines())} lines); use: tshark -r CAPTURE -X lua_script:{path}\n")
    return 0
