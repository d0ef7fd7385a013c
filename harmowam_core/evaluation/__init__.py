"""Closed-loop evaluation and deployment (paper sections 4.2-4.4, appendix D.2).

- `rollout`: one episode of an actor (a policy, or the scripted expert) on a station, with its video;
- `video`: the episode video (real camera beside the imagined frame, the expert in charge);
- `trace`: the episode trace (one parquet row per step: state, action, expert, p(interaction), stages);
- `runner`: `evaluate` (every router and protocol on the same scenes, in worker processes or shards) and
  `deploy` (a policy's episodes, in this process or in workers); both play episodes through `EvalSession`;
- `report`: stage-wise success rows, merging shards, results.json / results.csv / the success chart.
"""
