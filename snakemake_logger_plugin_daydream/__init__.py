"""daydream's terminal output as a Snakemake logger plugin (`logger: [daydream]` in the profile).

Snakemake finds logger plugins as top-level packages named `snakemake_logger_plugin_<name>`;
this one only re-exports the handler, which lives in `daydream.terminal`.
"""

from daydream.terminal import LogHandler

__all__ = ["LogHandler"]
