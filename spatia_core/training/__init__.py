"""Training of the Spatia diffusion model (flow matching on accelerate; ``spatia train``)."""
