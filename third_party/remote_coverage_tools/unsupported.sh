#!/bin/sh
echo "bazel coverage is not supported: @remote_coverage_tools is an offline stand-in (third_party/README.md)" >&2
exit 1
