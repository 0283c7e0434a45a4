"""Training throughput: a lean one-model loop against nalm's seed-batched trainer.

The same as ``nalm bench throughput`` (it takes the same options); see benchmarks/README.md for what is measured,
the results on our machine and where the time goes.

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --units nau-nmu,nalu-nalu,relu6 --seeds 1,10,100,1000
"""

import sys

from nalm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
