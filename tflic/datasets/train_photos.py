"""`train_photos`: the training photos of ../shared/data (BSDS500 and CID22-512).

  tflic datasets prepare train_photos --manual_dir=../shared/data    # the default folder
  python -m tflic.train --dataset=tfds:train_photos                    # both sets, 650 photos

The manual_dir is the folder that holds `train/` (400 BSDS500 JPEGs) and `cid22/` (250
CID22-512 PNGs). Configs: `all` (the default: both), `bsds500`, `cid22`. One split,
`train`. Training only: never evaluate on these.
"""

import os

import tensorflow_datasets as tfds

from tflic.datasets import images

DEFAULT_MANUAL_DIR = "../shared/data"

_BSDS500 = dict(
    folder="train",
    description=(
        "400 natural photos (481x321 or 321x481, JPEG) from the Berkeley Segmentation "
        "Dataset BSDS500 (its train and test splits), taken from the public repository "
        "seyed-mohammadreza-mousavi/HMEGS-BSDS500-Dataset at commit "
        "f4404c5d54624ae12aa344bf34e743026feee8df (upstream: the Berkeley Vision Group's "
        "BSDS500 release). For training only; never evaluate on them."),
    homepage="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html",
    license=("The Berkeley Vision Group's BSDS500 release terms (the folder's README "
             "names no other licence)."),
    citation="""@article{arbelaez2011contour,
  author = {Arbel{\\'a}ez, Pablo and Maire, Michael and Fowlkes, Charless and Malik, Jitendra},
  title = {Contour Detection and Hierarchical Image Segmentation},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume = {33},
  number = {5},
  pages = {898--916},
  year = {2011}
}""")

_CID22 = dict(
    folder="cid22",
    description=(
        "250 PNG images of 512x512 (248 RGB, 2 grayscale, stored as RGB; mostly photos, "
        "about 20 charts, logos and illustrations) from CID22, the Cloudinary Image Dataset "
        "of 2022, as published in the CID22/CID22-512 folder of the public repository "
        "imazen/codec-corpus (commit 55decfe). Pristine sources: no JPEG artifacts."),
    homepage="https://cloudinary.com/labs/cid22",
    license="Creative Commons Attribution-ShareAlike 4.0 (CC BY-SA 4.0), "
            "http://creativecommons.org/licenses/by-sa/4.0/",
    citation="""@misc{cid22,
  author = {Sneyers, Jon and Ben Baruch, Elad and Vaxman, Yaron},
  title = {{CID22}: Large-Scale Subjective Quality Assessment for High Fidelity Image Compression},
  publisher = {TechRxiv},
  year = {2023},
  note = {Cloudinary Image Dataset '22, https://cloudinary.com/labs/cid22}
}""")

# The first is the default config.
_SOURCES = {"all": [_BSDS500, _CID22], "bsds500": [_BSDS500], "cid22": [_CID22]}


class TrainPhotosConfig(tfds.core.BuilderConfig):
  """Which of the two folders a config reads."""

  def __init__(self, *, sources, **kwargs):
    super().__init__(**kwargs)
    self.sources = sources


def _describe(sources):
  return " + ".join(f"{s['folder']}/" for s in sources)


class TrainPhotos(images.ImageBuilder):
  """BSDS500 (train/) and CID22-512 (cid22/) photos of ../shared/data, for training."""

  BUILDER_CONFIGS = [
      TrainPhotosConfig(name=name, sources=sources,
                        description=f"{_describe(sources)} of the manual_dir")
      for name, sources in _SOURCES.items()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Run `tflic datasets prepare train_photos --manual_dir=DIR`, DIR holding train/ "
      "(BSDS500) and cid22/ (CID22-512); see ../shared/data.")

  def _info(self):
    sources = self.builder_config.sources
    return self.dataset_info_from_configs(
        description="\n\n".join(s["description"] for s in sources),
        features=self._features(),
        homepage=" ".join(s["homepage"] for s in sources),
        license=" / ".join(f"{s['folder']}/: {s['license']}" for s in sources),
        citation="\n".join(s["citation"] for s in sources),
    )

  def image_files(self, manual_dir):
    manual_dir = os.fspath(manual_dir)
    files = []
    for source in self.builder_config.sources:
      files += images.folder_images(os.path.join(manual_dir, source["folder"]),
                                    what=f"train_photos/{self.builder_config.name}")
    return files

  def _generate_examples(self, files):
    # Keys keep the folder: the two sets could share a file name.
    return images.examples(
        files, key=lambda p: f"{os.path.basename(os.path.dirname(p))}/{os.path.basename(p)}")
