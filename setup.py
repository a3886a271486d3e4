"""Installs tflic, a learned image codec for TensorFlow 2.14 / tensorflow-compression 2.14."""

import setuptools

setuptools.setup(
    name="tflic",
    version="0.1.0",
    description="Learned image compression with Swin transforms and a transformer context model.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    # configs/ lives at the top of the repository and is installed as tflic.configs so that
    # `--config=small` works after a non-editable install too.
    packages=setuptools.find_packages(include=["tflic", "tflic.*"]) + ["tflic.configs"],
    package_dir={"tflic.configs": "configs"},
    package_data={"tflic.configs": ["*.json"], "tflic": ["bundled/**/*", "evaluation/*.json"],
                  # The portable C range coder ships as source for apps to compile.
                  "tflic.rangecoder": ["*.h", "*.c"]},
    include_package_data=True,
    install_requires=[
        "tensorflow==2.14.1",
        "tensorflow-compression==2.14.1",
        "keras-cv",
        "absl-py",
        "tensorflow-datasets",
        # tensorflow-metadata>=1.16 needs protobuf 5, which breaks TF 2.14.
        "tensorflow-metadata<1.16",
        "Pillow>=10",
        "matplotlib",
        "ai-edge-litert",
        "bjontegaard",
        "pytest",
        "pytest-xdist",
        "tqdm",
    ],
    ext_modules=[
        setuptools.Extension(
            "tflic.rangecoder._binding",
            ["tflic/rangecoder/_binding.c", "tflic/rangecoder/range_coder.c"],
            depends=["tflic/rangecoder/range_coder.h"],
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
        )
    ],
    entry_points={"console_scripts": ["tflic=tflic.cli:main",
                                      "tflic-lite=tflic.lite.cli:main"]},
)
