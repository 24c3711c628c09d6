"""Everything that decides WHAT runs WHERE and records it (docs/design.md).

Packages: spec/ (the sweep file), store/ (the Parquet record), query/ (reading it), report/ (the
HTML report). Modules: cli, runner, search, planner, console, cluster, distill, dotted.
"""
