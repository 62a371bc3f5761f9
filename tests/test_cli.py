"""The ``cytoreview`` dispatcher: one table of commands, each command's module imported only when it runs."""

from __future__ import annotations

from importlib import import_module

import pytest

from cytoreview import cli


def test_help_lists_every_command_with_the_help_its_module_registers():
    lazy = cli.build_parser([]).format_help()
    full = cli.build_parser().format_help()
    assert lazy == full
    for name, _, help_line in cli.COMMANDS:
        assert name in lazy and help_line.split()[0] in lazy


@pytest.mark.parametrize("name,module", [(name, module) for name, module, _ in cli.COMMANDS])
def test_each_row_names_the_module_that_registers_it(name, module):
    parser = cli.build_parser([name])
    subparsers = next(a for a in parser._actions if a.dest == "command")
    registered = subparsers.choices[name]
    assert registered.get_default("func") is not None, f"{module}.register did not add {name!r} with a func"
    assert callable(import_module(module).register)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_command_help_shows_its_own_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", "--help"])
    assert exc.value.code == 0
    assert "--mpp" in capsys.readouterr().out
