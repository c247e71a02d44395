"""Write the demo model's training and held-out photos from photos bundled with well-known packages.

From scikit-image, only images whose docs say CC0, public domain or no known copyright
restrictions are used. Held out:
chelsea (CC0, Stefan van der Walt) and coffee (CC0, Rachel Michetti). The demo ships a
copy of chelsea as its held-out clip source.

From the sixteenth sitting on, training also sees three natural colour photos bundled with
scikit-learn and matplotlib (`train-16`): 8 of scikit-image's 13 training photos are grey,
and colour was a third of the held-out error. Their licences are in `EXTRA_COLOUR`.

    pip install scikit-image scikit-learn matplotlib && python tools/demo_data.py /tmp/demo-data
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

TRAIN = [
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "brick", "gravel", "grass", "cell",
    "clock",  # public domain (Stefan van der Walt)
    "coins",  # Brooklyn Museum, no known copyright restrictions
    "text",  # public domain
]
HELD_OUT = ["chelsea", "coffee"]
# The demo model's first sitting saw only these (the model card's rebuild commands use it).
FIRST_SITTING = TRAIN[:10]
# name: (the package that bundles it, licence). Only in `train-16`, so earlier sittings'
# commands still read exactly the photos they were trained on.
EXTRA_COLOUR = {
    "china": ("scikit-learn", "CC BY 2.0, danielbuechele on Flickr"),
    "flower": ("scikit-learn", "CC BY 2.0, vultilion on Flickr"),
    "grace_hopper": ("matplotlib", "public domain (US Navy photo)"),
}


def load_extra(name: str) -> np.ndarray:
    package, _licence = EXTRA_COLOUR[name]
    if package == "matplotlib":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data(f"{name}.jpg") as f:
            return matplotlib.image.imread(f, format="jpg")
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


def write_png(path: Path, img: np.ndarray) -> None:
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(np.uint8)
    h, w = img.shape[:2]
    container = av.open(str(path), "w", format="image2")
    stream = container.add_stream("png", rate=1)
    stream.width, stream.height, stream.pix_fmt = w, h, "rgb24"
    for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def main(out: str) -> None:
    import skimage.data as data

    splits = {"train": TRAIN, "train-1": FIRST_SITTING, "train-16": TRAIN + list(EXTRA_COLOUR), "val": HELD_OUT}
    for split, names in splits.items():
        folder = Path(out) / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            write_png(folder / f"{name}.png", load_extra(name) if name in EXTRA_COLOUR else getattr(data, name)())
            print(folder / f"{name}.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
