"""Checks of a config against this machine, before a run starts anything.

The config loader checks what a value means; these check what the machine makes of
it: output directories that cannot be created, a log path that is a directory, a
control socket path that cannot be served (or would delete a file), CPUs that do not
exist. Each failure is a :class:`~engine.ConfigError` naming the key and where its
value came from, so the CLI prints one line and exits 2 before anything trades.
"""

from __future__ import annotations

from pathlib import Path

import attrs

import hardware

from ._config import Config
from ._control import ControlError, check_socket_path
from ._errors import ConfigError


def check_config_paths(config: Config) -> None:
    """Create ``journal.dir`` and the log's directory; check the control socket path.

    Raises:
        ConfigError: naming ``journal.dir``, ``logging.path`` or ``control.socket``.
    """
    _make_dir(config, "journal.dir", config.resolve(config.journal.dir))
    if config.logging.path != "-":
        log = config.resolve(config.logging.path)
        if log.is_dir():
            raise ConfigError(
                config.where("logging.path"), "logging.path", f"{log} is a directory, not a file"
            )
        _make_dir(config, "logging.path", log.parent)
    if config.control.socket:
        try:
            check_socket_path(config.resolve(config.control.socket))
        except ControlError as exc:
            raise ConfigError(config.where("control.socket"), "control.socket", str(exc)) from exc


def check_cpus(config: Config, online: tuple[int, ...] | None = None) -> None:
    """Refuse ``hardware.*_cpus`` entries that name CPUs this machine does not have.

    A CPU that exists but that this process may not use (a cpuset) is the hardware
    plan's business: it is dropped with a warning there. One that does not exist at
    all is a mistake in the config.

    Args:
        config: the configuration.
        online: the machine's online CPUs (default: read from the system).

    Raises:
        ConfigError: naming the key and index, e.g. ``hardware.trio_cpus[0]``.
    """
    hw = config.hardware
    if not (hw.enabled and hw.pin):
        return
    fields = [f.name for f in attrs.fields(type(hw)) if f.name.endswith("_cpus")]
    if not any(getattr(hw, name) for name in fields):
        return
    if online is None:
        online = hardware.read_topology().online
    for name in fields:
        for i, cpu in enumerate(getattr(hw, name)):
            if cpu not in online:
                key = f"hardware.{name}"
                raise ConfigError(
                    config.where(key),
                    f"{key}[{i}]",
                    f"CPU {cpu} does not exist on this machine "
                    f"(online: {hardware.format_cpulist(online)})",
                )


def _make_dir(config: Config, key: str, path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(config.where(key), key, f"{path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            config.where(key), key, f"cannot create {path} ({exc.strerror or exc})"
        ) from exc
