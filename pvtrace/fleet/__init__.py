"""Fleet scale: many traces (`pvtrace fleet`) and parameter sweeps (`pvtrace sweep`) on Dask distributed.

Each trace or sweep cell is one Dask task that writes its own part into the output folder
(temporary name, then rename), so results stream out as tasks finish, a rerun skips what is
done and a worker lost mid-task costs only that task.
"""
