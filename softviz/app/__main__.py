"""`python -m softviz.app [flags]`: the same as `python app/app.py` and `softviz app`."""

from softviz.app.serve import main

main()
