"""A page's states in the `requests` table, and where the summaries count each."""

QUEUED, DONE, FAILED, SKIPPED, REDIRECTED = 0, 1, 2, 3, 4
# Where Summary and Stats count the pages in each state.
COUNTED_AS = {
    QUEUED: "pages_queued",
    DONE: "pages_done",
    FAILED: "pages_failed",
    SKIPPED: "pages_skipped",
    REDIRECTED: "pages_redirected",
}
