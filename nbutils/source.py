"""Show the package's own code in a notebook: what runs is what the learner reads.

``show_source(keras_train.compile_cnn)`` displays the function's source (highlighted in
Jupyter, plain text elsewhere), read from the module that runs, so the code on the page
and the code that trains cannot drift apart.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["source_of", "show_source"]


def source_of(*objects: Any) -> str:
    """The source code of each function, class or method, separated by blank lines."""
    if not objects:
        raise ValueError("show_source() needs at least one function or class")
    return "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)


def show_source(*objects: Any) -> str:
    """Display the source of ``objects`` (see :func:`source_of`) and return it."""
    code = source_of(*objects)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(code, language="python"))
            return code
    except ImportError:  # plain Python: print it
        pass
    print(code)
    return code
