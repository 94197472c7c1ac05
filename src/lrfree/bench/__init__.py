"""``lrfree bench``: every lrfree optimizer at its defaults against tuned baselines and peers.

Needs the ``bench`` extra (mnist1d, matplotlib, tqdm, numpy, scipy); the core library does not.
"""
