"""Scale-out on engines users already run: sweeps on Ray (`raysweep`), one run on several
processes with torch.distributed (`launch` + `train/distributed.py`)."""
