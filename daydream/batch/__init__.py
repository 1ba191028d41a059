"""Batch mode: a stage's calls to a model go through the provider's batch API (half price).

One module per job, top to bottom:
- `rounds`: the round job (`write_round`, the checkpoint `provider_batch`): submit what no
  live batch holds (each batch through `Run.spend_batch`, the budget guard), reattach, poll,
  collect into the paid-reply ledger at `pricing.batch_prices`, resubmit failures;
- `commands`: `scripts/batches.py` (`list_batches`, `collect`, `cancel`) and the end-of-run note;
- `gate`: what the default target holds back while a batch is pending, and the rounds it
  targets instead (`gate`, `round_input`);
- `policy`: which calls are batched (`batched`), the route check of the checkpoint, and the
  direct path's guard (`refuse_direct_call`, asked by `ledger.answer`);
- `ledger`: the durable batch ledger in `data/batches/`.

See each module's docstring, and README "Batch mode".
"""
