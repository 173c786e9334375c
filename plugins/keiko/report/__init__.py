"""The run page (keiko.contract.RunLayout.report): one HTML page per model run, redrawn after every step.

`write_run_page` is what keiko.step_runner calls; `page` gathers and renders, `plots` draws the PNGs that
evaluate and gate_features write once. Importing this package does not import matplotlib.
"""

from keiko.report.page import write_run_page

__all__ = ["write_run_page"]
