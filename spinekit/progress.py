"""Progress reporting: the core takes a ``progress(fraction, message)`` callback; the CLI shows it with tqdm."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[float, str], None]


@contextmanager
def tqdm_progress(desc: str) -> Iterator[Progress]:
    """A tqdm bar (0-100 %) whose callback takes ``(fraction in [0, 1], message)``; the message is the postfix."""
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, unit="%") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(int(round(100 * min(max(fraction, 0.0), 1.0))) - bar.n)

        yield progress
