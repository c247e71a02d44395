"""Average the weights of checkpoints of one model (a "model soup"): the demo model's sittings.

    python tools/average_weights.py -o AVERAGE.safetensors A.safetensors B.safetensors [...]

Two fine-tunes from the same weights lie close enough that their average is a model too, and
it can keep what each does better (see the demo model's card). Sums in float64, writes fp32.
"""

from __future__ import annotations

import argparse

import wanvae


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-o", "--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("checkpoints", nargs="+", help="checkpoints of one model config")
    args = p.parse_args()
    models = [wanvae.load(path) for path in args.checkpoints]
    if any(m.config != models[0].config for m in models):
        p.error("the checkpoints are of different model configs; only weights of one model average")
    states = [m.state_dict() for m in models]
    average = {k: (sum(s[k].double() for s in states) / len(states)).float() for k in states[0]}
    models[0].load_state_dict(average)
    wanvae.save(models[0], args.out)


if __name__ == "__main__":
    main()
