"""Great Expectations' Data Docs, made to work without the internet: the CSS and JavaScript its pages load
from CDNs are copied into the site and the pages point at the copies.

GE 1.24's page templates (great_expectations/render/view/templates: page.j2, index_page.j2,
js_script_imports.j2, top_navbar.j2) hard-code every stylesheet and script as a CDN URL. GE has no setting
for it: its custom views directory only adds templates (GE's own loader comes first), and offline Data Docs
were declined upstream (great_expectations issue #994, PR #2870, issue #8734). An air-gapped cluster then
gets an unstyled page, and an empty index, whose table bootstrap-table draws in the browser. So after GE
builds a site, `localize` rewrites it.

The files come from packages: PyPI's (requirements.txt) where one carries them, npm's bootstrap-table
tarball (on neither PyPI nor Debian; `make install` unpacks it into the venv). Versions, against what GE's
templates ask for: Bootstrap 4.5.3 for 4.3.1 (its bundle holds Popper 1.16, for Popper 1.12.9), jQuery
3.7.1, Font Awesome 6.2.1 for 6.6.0, bootstrap-datepicker 1.4.0 for 1.9.0, bootstrap-table 1.19.1, and
vega 5.33, vega-lite 5.23 and vega-embed 6.29 for GE's vega@5, vega-lite@5, vega-embed@6. Dark mode is off:
its stylesheet (@forevolve/bootstrap-dark) is on npm only, and GE's own dark overrides without it leave a
half-dark page that loads its logo from the internet.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

VENDOR = "static/vendor"
BOOTSTRAP_TABLE = "bootstrap-table-1.19.1"  # the Makefile's BOOTSTRAP_TABLE: npm's package, in the venv

# Each copy in the site (under VENDOR) and where it comes from: a distribution and a file in it.
FILES: dict[str, tuple[str, str]] = {
    "bootstrap/bootstrap.min.css": ("xstatic-bootstrap", "xstatic/pkg/bootstrap/data/css/bootstrap.min.css"),
    "bootstrap/bootstrap.bundle.min.js": (
        "xstatic-bootstrap",
        "xstatic/pkg/bootstrap/data/js/bootstrap.bundle.min.js",
    ),
    "jquery/jquery.min.js": ("xstatic-jquery", "xstatic/pkg/jquery/data/jquery.min.js"),
    "font-awesome/css/all.min.css": ("xstatic-font-awesome", "xstatic/pkg/font_awesome/data/css/all.min.css"),
    **{  # all.min.css loads these from ../webfonts/; browsers take the woff2 (listed before the ttf)
        f"font-awesome/webfonts/{font}.woff2": (
            "xstatic-font-awesome",
            f"xstatic/pkg/font_awesome/data/webfonts/{font}.woff2",
        )
        for font in ("fa-solid-900", "fa-regular-400", "fa-brands-400", "fa-v4compatibility")
    },
    "bootstrap-datepicker/bootstrap-datepicker.css": (
        "xstatic-bootstrap-datepicker",
        "xstatic/pkg/bootstrap_datepicker/data/bootstrap-datepicker.standalone.css",
    ),
    "bootstrap-datepicker/bootstrap-datepicker.js": (
        "xstatic-bootstrap-datepicker",
        "xstatic/pkg/bootstrap_datepicker/data/bootstrap-datepicker.js",
    ),
    "bootstrap-table/bootstrap-table.min.css": (BOOTSTRAP_TABLE, "dist/bootstrap-table.min.css"),
    "bootstrap-table/bootstrap-table.min.js": (BOOTSTRAP_TABLE, "dist/bootstrap-table.min.js"),
    "bootstrap-table/bootstrap-table-filter-control.min.css": (
        BOOTSTRAP_TABLE,
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    ),
    "bootstrap-table/bootstrap-table-filter-control.min.js": (
        BOOTSTRAP_TABLE,
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    ),
    **{
        f"vega/{name}.js": ("django-js-lib-vega-embed", f"js_lib_vega_embed/static/js_lib_vega_embed/{name}.js")
        for name in ("vega5", "vega-lite5", "vega-embed6")
    },
}

UNPKG, CDNJS = "https://unpkg.com/bootstrap-table", "https://cdnjs.cloudflare.com/ajax/libs"
DATEPICKER = f"{CDNJS}/bootstrap-datepicker/1.9.0"
# Each URL GE's templates load (query string dropped) and what the site loads instead, relative to its
# root; None: nothing (the tag is removed).
REMOTE: dict[str, str | None] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.bundle.min.js",
    f"{CDNJS}/popper.js/1.12.9/umd/popper.min.js": None,  # in Bootstrap's bundle
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    f"{CDNJS}/font-awesome/6.6.0/css/all.min.css": "font-awesome/css/all.min.css",
    f"{DATEPICKER}/css/bootstrap-datepicker.min.css": "bootstrap-datepicker/bootstrap-datepicker.css",
    f"{DATEPICKER}/js/bootstrap-datepicker.min.js": "bootstrap-datepicker/bootstrap-datepicker.js",
    f"{UNPKG}@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    f"{UNPKG}@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    **{
        f"{UNPKG}@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control{ext}": (
            "bootstrap-table/bootstrap-table-filter-control.min.css"
        )
        for ext in (".css", ".min.css")
    },
    f"{UNPKG}@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table/bootstrap-table-filter-control.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega5.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega/vega-lite5.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega/vega-embed6.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": None,
}
REMOTE = {url: path and f"{VENDOR}/{path}" for url, path in REMOTE.items()}
# The navbar's logo, which GE ships in the site's static/images too.
REMOTE["https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"] = "static/images/logo-long.png"

# A tag that loads a remote file, with its closing tag for a script (removed with it).
LOADING_TAG = re.compile(
    r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="(https?://[^"]*)"[^>]*>(?:\s*</script>)?', re.IGNORECASE
)
# Subresource integrity of GE's CDN files (not the packaged ones); `crossorigin` would make a page opened as a
# file (origin null) refuse its own scripts.
CDN_ATTRIBUTES = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')
DARK_MODE = "@media (prefers-color-scheme: dark)"
# GE's favicon link, one ../ short on validation pages (favicon.j2 counts one level less than the page has).
FAVICON = re.compile(r'href="(?:\.\.?/)*static/images/favicon\.ico"')


def _source(package: str, path: str) -> Path | None:
    if package == BOOTSTRAP_TABLE:
        found = Path(sys.prefix, "share", "keiko", BOOTSTRAP_TABLE, path)
    else:
        try:
            found = Path(str(distribution(package).locate_file(path)))
        except PackageNotFoundError:
            return None
    return found if found.is_file() else None


def localize(site: Path) -> list[str]:
    """Copy the packaged assets into `site` (a built Data Docs site) and point its pages at them.

    Returns the remote URLs its pages still load: a URL this table does not know (a GE upgrade changed its
    templates) or whose package is not installed. Those stay as they were, so the page is no worse than GE's."""
    for name, (package, path) in FILES.items():
        if source := _source(package, path):
            target = site / VENDOR / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    left: set[str] = set()
    for page in site.rglob("*.html"):
        left |= _localize_page(site, page)
    return sorted(left)


def _localize_page(site: Path, page: Path) -> set[str]:
    root = "../" * (len(page.relative_to(site).parts) - 1)  # links stay relative: served or opened as a file
    left: set[str] = set()

    def local(tag: re.Match[str]) -> str:
        url = tag[1]
        key = url.split("?", 1)[0]
        if key in REMOTE and REMOTE[key] is None:
            return ""
        if key not in REMOTE or not (site / REMOTE[key]).is_file():
            left.add(url)
            return tag[0]
        return CDN_ATTRIBUTES.sub("", tag[0]).replace(f'"{url}"', f'"{root}{REMOTE[key]}"')

    html = LOADING_TAG.sub(local, page.read_text(encoding="utf-8"))
    html = FAVICON.sub(f'href="{root}static/images/favicon.ico"', html.replace(DARK_MODE, "@media not all"))
    page.write_text(html, encoding="utf-8")
    return left
