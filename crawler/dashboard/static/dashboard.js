// While the crawl runs (body[data-live="1"]), fetch this same page every few seconds and
// swap in its <main>: the server renders everything, charts included.
"use strict";
(function () {
  const EVERY = 2000;
  async function refresh() {
    if (document.body.dataset.live !== "1") return;
    try {
      const response = await fetch(location.href, { cache: "no-store" });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        document.getElementById("main").replaceWith(page.getElementById("main"));
        document.getElementById("live").replaceWith(page.getElementById("live"));
        document.body.dataset.live = page.body.dataset.live;
      }
    } catch (err) {
      // the server went away: keep the last page, try again later
    }
    setTimeout(refresh, EVERY);
  }
  setTimeout(refresh, EVERY);
})();
