#!/usr/bin/env bash
# The end-to-end demo (local cluster, chart, demo model and data, traffic, reviews,
# retraining, promotion) is not assembled yet: it needs the local cluster, the inference
# server, the trainer and the chart together. Say so plainly instead of pretending.
echo "The end-to-end demo is not available yet." >&2
echo "What works today: scripts/test.sh (the test suite) and the quickstart in README.md." >&2
exit 2
