"""`kodak`: the 24 Kodak PhotoCD images, an evaluation set (split `test`).

  tflic datasets prepare kodak --manual_dir=../shared/data/kodak     # the default folder
  tflic eval --dataset=tfds:kodak --out=eval_out
"""

import os
import re

from tflic.datasets import images
from tflic import errors

DEFAULT_MANUAL_DIR = "../shared/data/kodak"
_NAME = re.compile(r"kodim\d\d\.png")


class Kodak(images.ImageBuilder):
  """The Kodak Lossless True Color Image Suite (kodim01..kodim24)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Run `tflic datasets prepare kodak --manual_dir=DIR`, DIR holding kodim01.png .. "
      "kodim24.png; see ../shared/data/kodak.")

  def _info(self):
    return self.dataset_info_from_configs(
        description=(
            "The 24 images of the Kodak Lossless True Color Image Suite (kodim01..kodim24, "
            "768x512 or 512x768, RGB PNG), released by the Eastman Kodak Company for "
            "unrestricted usage; taken from the public repository "
            "MohamedBakrAli/Kodak-Lossless-True-Color-Image-Suite at commit dd2e110 "
            "(folder PhotoCD_PCD0992, renamed kodimNN.png). The standard benchmark of "
            "learned image compression papers. Evaluation only: never train on it."),
        features=self._features(),
        homepage="http://r0k.us/graphics/kodak/",
        license="Released by the Eastman Kodak Company for unrestricted usage.",
        citation="""@misc{kodak,
  author = {{Eastman Kodak Company}},
  title = {Kodak Lossless True Color Image Suite ({PhotoCD PCD0992})},
  howpublished = {http://r0k.us/graphics/kodak/}
}""",
    )

  def split_name(self):
    return "test"

  def image_files(self, manual_dir):
    files = [f for f in images.folder_images(manual_dir, what="kodak")
             if _NAME.fullmatch(os.path.basename(f))]
    if not files:
      raise errors.TflicError(f"kodak: no kodimNN.png images in {manual_dir}")
    return files
