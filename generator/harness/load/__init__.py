"""`bulwark loadtest`: generated services against bare FastAPI under wrk.

`scenario` defines what a scenario is and the alternated measuring most share; `scenarios`
lists them; `runner` runs them and writes the table and the JSON; `report` draws a saved
JSON document.
"""
