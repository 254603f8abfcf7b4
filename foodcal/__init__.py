"""What every foodcal process shares, in rooms by job: domain/, settings/, store/, rpc/, cli/, ops/
(docs/architecture.md); generated contracts in v1/ and torchserve/."""
