"""`bulwark chaos`: a generated service's dependencies broken under load.

`scenario` defines what a fault scenario is and what it reports; one module per fault;
`scenarios` lists them; `runner` runs them; `infra` starts and breaks what they break;
`probe` is the paced client that times every answer.
"""
