"""What the template's tests, its benchmark and its tools share: rendering the template, running
commands in a render, starting a rendered service, finding the Python interpreters a render asks
for, and building template releases in temporary repositories. It never imports ``tests``."""
