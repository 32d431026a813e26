"""The published web-page statistics the corpus follows, and how pages are drawn from them.

Source: the HTTP Archive's Web Almanac, Page Weight chapter.
- 2024 edition (crawl of October 2024, desktop home pages): median page 2,652 KB and 71
  requests; bytes by type at the median: images 1,054 KB, JavaScript 613 KB, fonts
  131 KB, CSS 78 KB, HTML 18 KB; requests: JavaScript 24, images 18.
  https://almanac.httparchive.org/en/2024/page-weight
- 2020 edition: the 90th percentile of page weight is 7.4 MB on desktop.
  https://almanac.httparchive.org/en/2020/page-weight
- 2019 edition: the 90th percentile of requests per page is 179.
  https://almanac.httparchive.org/en/2019/page-weight

Page weight and request count are each modelled as log-normal, fitted to the median and
90th percentile above (sigma = ln(p90 / median) / 1.2816), with the two correlated
(rho = 0.6: heavier pages make more requests). Draws outside the corpus's range (50 KB
to 5 MB, 5 to 150 resources, the Browser issue's bounds) are drawn again, so the corpus
is the published distribution truncated to that range.
"""

from __future__ import annotations

import math
import random

MEDIAN_BYTES = 2_652 * 1024
P90_BYTES = 7.4 * 1024 * 1024
MEDIAN_REQUESTS = 71
P90_REQUESTS = 179
Z90 = 1.2816  # the standard normal's 90th percentile
RHO = 0.6

MIN_BYTES, MAX_BYTES = 50 * 1024, 5 * 1024 * 1024
MIN_RESOURCES, MAX_RESOURCES = 5, 150

# Shares of a page's bytes and requests by type, from the 2024 medians above (requests
# for the types the chapter does not count are this corpus's own choice).
BYTE_SHARES = {"image": 1054, "js": 613, "font": 131, "css": 78, "html": 18}
REQUEST_SHARES = {"image": 18, "js": 24, "font": 4, "css": 6, "html": 1}


def draw_page(rng: random.Random) -> tuple[int, int]:
    """(total bytes, resource count) of one page."""
    sigma_b = math.log(P90_BYTES / MEDIAN_BYTES) / Z90
    sigma_r = math.log(P90_REQUESTS / MEDIAN_REQUESTS) / Z90
    while True:
        z1 = rng.gauss(0, 1)
        z2 = RHO * z1 + math.sqrt(1 - RHO**2) * rng.gauss(0, 1)
        size = int(MEDIAN_BYTES * math.exp(sigma_b * z1))
        count = round(MEDIAN_REQUESTS * math.exp(sigma_r * z2))
        if MIN_BYTES <= size <= MAX_BYTES and MIN_RESOURCES <= count <= MAX_RESOURCES:
            return size, count
