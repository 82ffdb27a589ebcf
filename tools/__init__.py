"""The template repository's own tools that are not tests: the documentation's generators and
`make demo`."""
