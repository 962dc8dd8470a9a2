"""pawprint's witness: a C2SP tlog-witness for the registry log (``pawprint witness serve``).

It stands on ``protocol`` alone (an import contract): a witness is run by someone other than the log's
operator, and needs neither the verifier nor the owner agent. See ``witness._witness``.
"""

from witness._witness import Answer, Latest, Witness, WitnessStateError, serve_forever, serving

__all__ = ["Answer", "Latest", "Witness", "WitnessStateError", "serve_forever", "serving"]
