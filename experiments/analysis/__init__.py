"""Pure analyses: tables in, figures + quality out. Never touches a device, ray or torch.cuda."""
