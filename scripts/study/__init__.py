"""Studies on a SLURM cluster (`python -m scripts.study --help`): `plan` writes AlgoPerf's
job config and our sbatch array script (`study.sbatch`, beside this file), `submit` and
`status` speak to SLURM, `score` runs AlgoPerf's own scoring code; `smoke` is the CI study
on the single-node SLURM of `single_node_slurm.sh`. The study never imports the product's
internals to train: each task runs submission.py through AlgoPerf's runner, as a user does.
"""
