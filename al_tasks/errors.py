"""One exception tree for the product.

Every error the product raises on purpose derives from :class:`ActiveLearningError`,
so a caller (the CLI, an operator) can tell "the input or the setup is wrong, here is
what to do" from a bug. The classes also derive from the built-in they refine
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.

::

    ActiveLearningError
    ├── ConfigError            a setting has a value that cannot be used
    ├── CorpusError            the corpus cannot be read at all (file, columns)
    ├── LabelFileError         a labelled file cannot be read at all (the message names file and line)
    ├── LabelStoreError        the label store is unreadable or was given bad rows
    ├── NotSeededError         a round was asked for before the task was seeded
    ├── EmptyPoolError         nothing left to query
    ├── FeaturesNotFoundError  the features a step needs were never computed
    ├── ModelNotFoundError     no registered model under the name / alias / version
    └── InputFileNotFoundError an input the user must provide is missing (names where to put it)
"""

from __future__ import annotations


class ActiveLearningError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(ActiveLearningError, ValueError):
    """A setting has a value that cannot be used."""


class CorpusError(ActiveLearningError, ValueError):
    """The corpus file cannot be read at all (missing file or columns)."""


class LabelFileError(ActiveLearningError, ValueError):
    """A labelled file cannot be read at all. The message names the file (and line)."""


class LabelStoreError(ActiveLearningError, ValueError):
    """The label store is unreadable, or rows given to it are not valid labels."""


class NotSeededError(ActiveLearningError, ValueError):
    """A round needs labels and an evaluation set, and the task has none yet."""


class EmptyPoolError(ActiveLearningError, ValueError):
    """Every corpus item is labelled or in the evaluation set: nothing to query."""


class FeaturesNotFoundError(ActiveLearningError, FileNotFoundError):
    """The features (or saved featurizer) a step needs do not exist."""


class ModelNotFoundError(ActiveLearningError, LookupError):
    """No model is registered under the requested name, alias or version."""


class InputFileNotFoundError(ActiveLearningError, FileNotFoundError):
    """A file the user must provide (seed labels, a labelled file) is not where expected."""
