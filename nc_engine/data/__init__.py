"""Loading a user's clean images, whatever their format, into the sample a scan optimises and checks on."""
