"""The optional warm export server: one process per backend that forks a fresh child per job."""
