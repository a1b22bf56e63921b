"""The Envoy mesh: configuration rendered from a typed topology, and the Envoy process.

* :mod:`veritally.mesh.envoy`: ``Topology`` → Envoy bootstrap YAML, ``validate``.
* :mod:`veritally.mesh.process`: ``EnvoyProcess``, start/ready/stats/stop of a real Envoy.
"""
