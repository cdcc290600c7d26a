"""The spider author's tools, beside the crawl's stages: one page at a time (`page`),
the fetch/parse/new commands (`devtools`), the shell, the checks runner, the HTTP cache
for development, and `crawler bench` with its generated site."""
