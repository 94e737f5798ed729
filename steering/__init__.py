"""What changes behaviour at inference time: steering vectors and their construction (steerscope.steering)."""
