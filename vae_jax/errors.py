"""Errors raised by vae_jax for bad input: each message names the problem and how to fix it."""


class VAEJaxError(Exception):
    """Base class of the errors vae_jax raises for bad input; scripts print them as one line."""


class ConfigError(VAEJaxError, ValueError):
    """A configuration field has a bad value or an unknown name."""


class ShapeError(VAEJaxError, ValueError):
    """An array has the wrong shape or dtype for the function it was passed to."""


class DataError(VAEJaxError):
    """A dataset cannot be found, prepared or used."""


class DatasetDownloadError(DataError):
    """A dataset is not prepared and could not be downloaded (no internet?), and no folder of its
    original files was given to prepare it offline.

    Attributes:
      dataset: its TFDS name.
    """

    def __init__(self, dataset: str, option: str = "manual_dir=FOLDER (config.manual_dir)"):
        self.dataset = dataset
        super().__init__(self.message(option))

    def message(self, option: str) -> str:
        """The error's line, naming `option` as the way to give the folder (a script names its
        own flag)."""
        return (f"could not download {self.dataset!r} (no internet?): pass {option}, a folder "
                f"holding the original download files of {self.dataset!r}, to prepare it "
                "offline")


class CheckpointError(VAEJaxError):
    """A checkpoint cannot be restored into this run (missing, incompatible or broken)."""


class DamagedCheckpointError(CheckpointError):
    """Checkpoints whose files are missing, truncated or differ from the digest saved with them.

    Attributes:
      reasons: what is wrong with each damaged checkpoint, by step.
    """

    def __init__(self, message: str, reasons: dict[int, str]):
        super().__init__(message)
        self.reasons = reasons


class TrainingDivergedError(VAEJaxError, FloatingPointError):
    """The loss or the gradient of a training step became NaN or infinite.

    Attributes:
      step: the 1-based optimizer step whose terms were not finite.
      epoch: the epoch that step belongs to.
      terms: which of "reconstruction", "KL" and "gradient" were not finite.
    """

    def __init__(self, message: str, step: int, epoch: int, terms: tuple[str, ...]):
        super().__init__(message)
        self.step, self.epoch, self.terms = step, epoch, terms


class WorkdirError(ConfigError):
    """The run folder (``--workdir``) cannot be used: it, or a folder or file in it that training
    writes, is not writable, or another process is writing it (`vae_jax.app.run_folder`)."""
