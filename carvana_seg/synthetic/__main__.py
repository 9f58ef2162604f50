"""`python -m carvana_seg.synthetic --out DIR [--cars N] [--size HxW] [--test-cars N]`: write a set."""

from carvana_seg.synthetic.generate import main

if __name__ == "__main__":
    main()
