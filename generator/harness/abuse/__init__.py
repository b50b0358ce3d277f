"""`bulwark attack`: a generated service under hostile clients, directly and behind its nginx.

`scenario` defines what an attack is and what it reports; `wire` is the attacker's raw socket;
`service` starts the service (and its nginx) and reads its own figures; one module per family
of attacks (`spoofing`, `slow`, `floods`); `scenarios` lists them; `runner` runs them.
"""
