"""Offline stand-in for @rules_java//java:defs.bzl: Bazel 4's native Java rules, re-exported.

@bazel_tools loads these names from here; see third_party/README.md.
"""

# buildifier: disable=native-java
java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_lite_proto_library = native.java_lite_proto_library
java_package_configuration = native.java_package_configuration
java_plugin = native.java_plugin
java_proto_library = native.java_proto_library
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
