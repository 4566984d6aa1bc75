"""Online learning in the running system.

- :mod:`~streamproc.learning.scorer`: every worker scores profiles with the served models and
  records observations for the learner;
- :mod:`~streamproc.learning.observations`: the records of the learning topic;
- :mod:`~streamproc.learning.learner`: the one learner, which labels, learns and publishes;
- :mod:`~streamproc.learning.modelstore`: where signed model snapshots live in Redis.

The models themselves (River, on plain dicts) are in :mod:`streamproc.models`.
"""
