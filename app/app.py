"""The softviz Gradio app, as a Hugging Face Space runs it: `python app.py` (here `python app/app.py -h` for the
flags). The app is the package softviz.app; in a Space folder (app/build_space.py) its copy lies beside this file."""

from softviz.app import main

if __name__ == "__main__":
    main()
