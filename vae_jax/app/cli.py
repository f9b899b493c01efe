"""The command-line plumbing the scripts share: `run`, and a ``--config`` preset flag. A bad
config file, bad ``--config.FIELD=value`` overrides, any other bad flag and a `VAEJaxError` end the
program with one line ``error: …`` (and the usage, for flags), never a traceback. ``--help`` (or
``-h``, ``--helpshort``; ``--helpfull`` adds absl's and JAX's flags) prints `help_text` and exits 0.
"""

import ast
import difflib
import glob
import inspect
import os
import re
import sys
import textwrap
import traceback
import types
from typing import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax.app import configs
from vae_jax.errors import ConfigError, DatasetDownloadError, VAEJaxError

_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def _override_message(error: Exception) -> str:
    message = str(error).replace("\\'", "'").replace("\\n", " ")
    if isinstance(error, (KeyError, AttributeError)):  # ml_collections: the field's repr
        message = message.strip("'\"")
        if message.isidentifier():
            return f"no config field {message!r}"
    return message


def _exit_bad_override(error: Exception, usage: str):
    sys.exit(f"error: bad --config override: {_override_message(error)}\nUsage: {usage}")


# The presets' folder as help and messages name it: relative to the repository (or site-packages),
# so that no machine's path is printed.
_PRESETS_SHOWN = "vae_jax/app/configs"
_PRESETS_HINT = f"a preset such as {_PRESETS_SHOWN}/default.py"


def _presets() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(configs.CONFIG_DIR, "*.py"))
                  if not os.path.basename(p).startswith("_"))


def _preset_summary(name: str) -> str:
    """The first paragraph of the docstring of the preset file `name` (read, not run), without a
    leading ``NAME:``; "" when it has none."""
    try:
        with open(os.path.join(configs.CONFIG_DIR, name), encoding="utf-8") as file:
            doc = ast.get_docstring(ast.parse(file.read())) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    summary = " ".join(doc.split("\n\n")[0].split())
    return summary.removeprefix(f"{name[:-3]}: ")


def _missing_file_hint(path: str) -> str:
    close = difflib.get_close_matches(os.path.basename(path), _presets(), n=1)
    if close:
        return f"did you mean vae_jax/app/configs/{close[0]}?"
    return f"the presets are vae_jax/app/configs/{{{','.join(p[:-3] for p in _presets())}}}.py"


def _moved_preset(path: str) -> str | None:
    """The new path of a preset named by its path before vae_jax 0.2 (``…vae_jax/configs/F.py``
    that no longer exists), or None."""
    head, name = os.path.split(os.path.normpath(path))
    if os.path.lexists(path) or not head.endswith(os.path.join("vae_jax", "configs")):
        return None
    moved = os.path.join(os.path.dirname(head), "app", "configs", name)
    return moved if os.path.exists(moved) else None


def _line_in(error: BaseException, path: str) -> str:
    """``path:LINE`` of the innermost frame of `error`'s traceback in the file `path`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"{path}:{frames[-1].lineno}" if frames else path


def _describe(error: BaseException) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def load_config_file(argument: str, module_name: str = "config_config"
                     ) -> ml_collections.ConfigDict:
    """The locked ConfigDict that ``get_config()`` of the file ``PATH`` returns, for ``--config``
    values ``PATH`` or ``PATH:ARG`` (``get_config(ARG)``), as ml_collections reads them.

    Raises `ConfigError` naming the file and the fix when the file is missing, a folder, not a
    ``.py`` file, unreadable, not valid Python, raises while it runs or in ``get_config``, has no
    ``get_config``, takes other arguments than given, returns something else than a ConfigDict,
    or defines other fields than `configs.get_default`. Exceptions raised by the file's code are
    chained to the `ConfigError` (``__cause__``).
    """
    path, colon, config_arg = argument.partition(":")
    args = (config_arg,) if colon else ()
    if not path:
        raise ConfigError(f"--config={argument} names no file: pass {_PRESETS_HINT}")
    moved = _moved_preset(path)
    if moved:
        print(f"warning: the presets moved to vae_jax/app/configs/ in vae_jax 0.2; reading "
              f"{moved} (pass that path: the old one goes in 0.3)", file=sys.stderr, flush=True)
        path = moved
    if not os.path.lexists(path):
        raise ConfigError(f"config file {path} does not exist; {_missing_file_hint(path)}")
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder, not a file; pass a .py file such as "
                          "vae_jax/app/configs/default.py")
    if not path.endswith(".py"):
        raise ConfigError(f"config file {path} is not a Python file (.py): pass {_PRESETS_HINT}, "
                          "whose get_config() returns an ml_collections.ConfigDict")
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}; "
                          "check that it exists and that you may read it") from error
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes (Python < 3.12)
        if isinstance(error, SyntaxError):
            where = f"{path}:{error.lineno}" if error.lineno else path
            problem = f"{type(error).__name__}: {error.msg}"
        else:
            where, problem = path, _describe(error)
        raise ConfigError(f"config file {where} is not valid Python ({problem}); fix the "
                          "file") from error
    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module  # as ml_collections does (dataclasses and pickle need it)
    try:
        exec(code, module.__dict__)  # pylint: disable=exec-used
    except Exception as error:  # the file's own code failed: say where, keep it as the cause
        raise ConfigError(f"config file {_line_in(error, path)} raised {_describe(error)} while "
                          "it ran; fix the file") from error
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {path} defines no get_config() function; it must "
                          "define get_config() returning an ml_collections.ConfigDict, as "
                          "vae_jax/app/configs/default.py does")
    try:
        inspect.signature(get_config).bind(*args)
    except TypeError:
        if args:
            raise ConfigError(f"get_config() of config file {path} takes no argument, but "
                              f"--config={argument} passes {config_arg!r}: drop "
                              f"':{config_arg}'") from None
        raise ConfigError(f"get_config() of config file {path} needs an argument: pass it as "
                          f"--config={path}:ARG") from None
    except ValueError:  # no signature to check (a builtin): let the call tell
        pass
    try:
        config = get_config(*args)
    except Exception as error:  # the file's own code failed: say where, keep it as the cause
        raise ConfigError(f"get_config() of config file {_line_in(error, path)} raised "
                          f"{_describe(error)}; fix the file") from error
    if not isinstance(config, ml_collections.ConfigDict):
        returned = ("None (is its return statement missing?)" if config is None
                    else f"a {type(config).__name__}")
        raise ConfigError(f"get_config() of config file {path} returned {returned}, not an "
                          "ml_collections.ConfigDict")
    configs.check_field_names(config, f"config file {path}")
    config.lock()
    return config


class _ConfigFileParser(flags.ArgumentParser):
    """ml_collections' ``--config`` file parser, with `load_config_file`'s one-line errors."""

    def __init__(self, name: str):
        self.name = name

    def parse(self, argument):
        return load_config_file(argument, f"{self.name}_config")

    def flag_type(self):
        return "config object"


# Command-line arguments that ask for help (absl also reads a single dash), and whether they ask
# for every flag of every module (absl's --helpfull) rather than the script's own.
_HELP_ARGUMENTS = {"--help": False, "-help": False, "-h": False, "-?": False,
                   "--helpshort": False, "-helpshort": False, "--helpfull": True, "-helpfull": True}


def _help_request(argv: list[str]) -> bool | None:
    """None when no argument of `argv` (after the program, before any ``--``) asks for help, else
    whether the first that does asks for every module's flags (``--helpfull``)."""
    for argument in argv[1:]:
        if argument == "--":
            return None
        if argument in _HELP_ARGUMENTS:
            return _HELP_ARGUMENTS[argument]
    return None


def define_config_flag(usage: str) -> flags.FlagHolder:
    """Defines ``--config`` (a preset file, default `configs.DEFAULT_CONFIG`, locked so that an
    unknown field is an error; help shows the default as ``vae_jax/app/configs/default.py``).
    ml_collections reads the overrides already here, so a bad one exits at once, unless the
    command line asks for help (`flags_parser` then prints the help, whatever else is on the
    line). A ``--config=FILE`` on the command line is read by `load_config_file` when the flags
    are parsed (`flags_parser` prints its `ConfigError`)."""
    asks_help = _help_request(sys.argv) is not None
    try:
        holder = config_flags.DEFINE_config_file(
            "config", configs.DEFAULT_CONFIG,
            "Preset config file: one of the presets listed below, or a file of yours whose "
            "get_config() returns an ml_collections.ConfigDict of the config fields below; set a "
            "field with --config.FIELD=value.", lock_config=True,
            sys_argv=sys.argv[:1] if asks_help else None)  # --help: no overrides to read
    except _OVERRIDE_ERRORS as error:
        _exit_bad_override(error, usage)
        raise  # unreachable: sys.exit raised
    # The default was read above; the file given on the command line is read at parse time.
    flag = flags.FLAGS[holder.name]
    flag.parser = _ConfigFileParser(holder.name)
    flag.default_as_str = repr(f"{_PRESETS_SHOWN}/{os.path.basename(configs.DEFAULT_CONFIG)}")
    return holder


def _config_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """The ``--config=FILE`` (or ``--config FILE``) arguments of `argv` and its
    ``--config.FIELD[=value]`` overrides (with their value when it is the next argument), before
    any ``--``."""
    files, overrides = [], []
    arguments = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    for i, argument in enumerate(arguments):
        for pattern, into in ((r"-{1,2}config(=|$)", files), (r"-{1,2}(no)?config\.", overrides)):
            if re.match(pattern, argument):
                into.append(argument)
                # The value may follow (the scripts take no positional arguments).
                value = arguments[i + 1] if "=" not in argument and i + 1 < len(arguments) else None
                if value is not None and value not in _HELP_ARGUMENTS and (
                        into is files or not value.startswith("-")):
                    into.append(value)
    return files, overrides


def _read_config(program: str, arguments: list[str]) -> ml_collections.ConfigDict:
    """The config that ``--config`` arguments `arguments` (``--config=FILE``, overrides) give, read
    as the scripts read it, in flags of its own (the script's flags are left alone). Raises
    `ConfigError` (the file) or `flags.Error` / `_OVERRIDE_ERRORS` (an override)."""
    flag_values = flags.FlagValues()
    argv = [program, *arguments]
    holder = config_flags.DEFINE_config_file("config", configs.DEFAULT_CONFIG, lock_config=True,
                                             flag_values=flag_values, sys_argv=argv)
    flag_values["config"].parser = _ConfigFileParser("help")
    try:
        flag_values(argv)
    except flags.Error as error:
        if isinstance(error.__context__, ConfigError):  # absl wraps the parser's ValueError
            raise error.__context__ from None
        raise
    return holder.value


def _help_config(argv: list[str]) -> tuple[ml_collections.ConfigDict, str, list[str]]:
    """The config whose values ``--help`` shows for the command line `argv`, what they are (for
    the header) and notes on what could not be read: the ``--config=FILE`` preset with the
    ``--config.FIELD`` overrides; a preset that does not load gives default.py's values, an
    override that does not apply the values without the overrides, each with a note."""
    files, overrides = _config_arguments(argv)
    config, source, notes = configs.get_default(), "default.py's defaults", []
    if files:
        try:
            config = _read_config(argv[0], files)
            name = files[-1].partition("=")[2] if "=" in files[-1] else files[-1]
            source = f"the values of {name}"
        except (ConfigError, flags.Error) as error:
            notes.append(f"note: --config could not be read ({error}); the values below are "
                         "default.py's")
            files = []
    if overrides:
        try:
            config = _read_config(argv[0], files + overrides)
            source += " and the --config.FIELD overrides of the command line"
        except (ConfigError, flags.Error, *_OVERRIDE_ERRORS) as error:
            notes.append(f"note: bad --config override ({_override_message(error)}); the values "
                         "below leave the overrides out")
    return config, source, notes


def _wrap(text: str, width: int, indent: str = "  ") -> str:
    """`text` wrapped to `width` columns as absl wraps a flag's help: `indent` on the first line,
    two spaces more on the others."""
    return "\n".join(textwrap.wrap(text, width, initial_indent=indent,
                                   subsequent_indent=indent + "  ", break_on_hyphens=False,
                                   break_long_words=False))


def help_text(usage: str, full: bool = False, argv: list[str] | None = None) -> str:
    """What ``--help`` prints: the `usage` line, the ``__main__`` module's docstring, the script's
    flags (absl's short help, with the flags this module defined for it: ``--config``,
    ``--data_dir``, …; with `full`, every module's flags) and, for a script with ``--config``,
    the preset files with their docstrings' first paragraph and every config field as
    ``--config.FIELD`` with its value and meaning (`configs.field_help`). The values are those of
    the ``--config=FILE`` and ``--config.FIELD=value`` arguments of the command line `argv`
    (default `sys.argv`), or default.py's, with a note line on what could not be read
    (`_help_config`). Lines are wrapped to absl's help width (the terminal's, else 80
    columns)."""
    argv = sys.argv if argv is None else argv
    width = flags.get_help_width()
    main_module = sys.argv[0]  # absl's name of the script's module
    for flag in flags.FLAGS.get_flags_for_module(__name__):
        flags.FLAGS.register_key_flag_for_module(main_module, flag)
    parts = [f"Usage: {usage}"]
    doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
    if doc:
        parts.append(doc)
    flag_help = flags.FLAGS.get_help() if full else flags.FLAGS.main_module_help()
    if flag_help:
        parts.append("flags:\n" + flag_help.rstrip())
    if "config" in flags.FLAGS:
        presets = [_wrap(f"{name}: {_preset_summary(name)}".rstrip(": "), width)
                   for name in _presets()]
        parts.append(f"presets (--config={_PRESETS_SHOWN}/NAME.py):\n" + "\n".join(presets))
        config, source, notes = _help_config(argv)
        parts += [_wrap(note, width, indent="") for note in notes]
        parts.append(_wrap(f"config fields (--config.FIELD=value), with {source}:", width,
                           indent="") + "\n" + configs.field_help(width, config))
    if not full:
        parts.append("Try --helpfull to get a list of all flags.")
    return "\n\n".join(parts) + "\n"


def _print_help_and_exit(usage: str, full: bool, argv: list[str]) -> None:
    try:
        sys.stdout.write(help_text(usage, full, argv))
        sys.stdout.flush()
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def flags_parser(usage: str) -> Callable:
    """absl's flag parsing for ``app.run(main, flags_parser=...)``, with bad flags and bad
    ``--config.FIELD`` overrides reported in one line, and ``--help`` / ``-h`` /
    ``--helpshort`` / ``--helpfull`` (before any ``--``) printing `help_text` and exiting 0
    before any other flag is checked, whatever else is on the command line."""

    def parse(argv):
        full = _help_request(argv)
        if full is not None:
            _print_help_and_exit(usage, full, argv)
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            if isinstance(error.__context__, ConfigError):  # absl wraps the parser's ValueError
                sys.exit(f"error: {error.__context__}")
            sys.exit(f"error: {error}\nUsage: {usage}")
        except _OVERRIDE_ERRORS as error:
            _exit_bad_override(error, usage)

    return parse


def define_data_dir_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """``--data_dir`` and ``--manual_dir`` for scripts that reload a run's dataset (default: the
    folders the run was trained with)."""
    return (flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's)."),
            flags.DEFINE_string("manual_dir", None,
                                "Folder with the original files (default: the run's)."))


def run(command: Callable[[], None], usage: str,
        errors: tuple[type[Exception], ...] = (VAEJaxError,),
        manual_dir_flag: str | Callable[[str], str] = "--manual_dir") -> None:
    """`app.run` of a script whose work is ``command()``: flags parsed by `flags_parser`, no
    positional arguments, absl logging at WARNING (Orbax and TFDS log every file they touch at
    INFO), and any of `errors` reported as one line ``error: …`` with exit status 1.

    A dataset that cannot be downloaded (`DatasetDownloadError`) is reported with the script's
    flag for the folder of its original files: `manual_dir_flag`, or ``manual_dir_flag(name)``
    for a script with one such flag per dataset."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)
        try:
            command()
        except DatasetDownloadError as error:
            flag = manual_dir_flag(error.dataset) if callable(manual_dir_flag) else manual_dir_flag
            sys.exit(f"error: {error.message(flag + '=FOLDER')}")
        except errors as error:
            sys.exit(f"error: {error}")

    app.run(main, flags_parser=flags_parser(usage))
