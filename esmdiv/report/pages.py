"""Writing the pages for people (``esmdiv report``): the HTML page and/or the Markdown, its PNGs in
``<name>_files/`` beside it."""

from __future__ import annotations

from pathlib import Path

from esmdiv.report.files import write_text
from esmdiv.report.html import render_html
from esmdiv.report.markdown import render_markdown
from esmdiv.report.plots import make_plots


def write_reports(
    report: dict,
    html_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    plots_in_markdown: bool = True,
    source: str | None = None,
) -> list[Path]:
    """Write the HTML page and/or the Markdown (its PNGs in ``<name>_files/`` beside it)."""
    written: list[Path] = []
    need_plots = html_path is not None or (markdown_path is not None and plots_in_markdown)
    plots = make_plots(report) if need_plots else []
    if html_path is not None:
        write_text(render_html(report, plots, source), html_path, option="--html")
        written.append(Path(html_path))
    if markdown_path is not None:
        markdown_path = Path(markdown_path)
        links: dict[str, str] = {}
        if plots_in_markdown:
            folder = markdown_path.with_name(markdown_path.stem + "_files")
            for plot in plots:
                if plot.png is not None:
                    target = folder / f"{plot.key}.png"
                    write_text(plot.png, target, option="--markdown")
                    links[plot.key] = f"{folder.name}/{target.name}"
                    written.append(target)
        write_text(
            render_markdown(report, plots if plots_in_markdown else [], links, source),
            markdown_path,
            option="--markdown",
        )
        written.append(markdown_path)
    return written
