"""Edge devices: device protocol, routing proxy, LCP and server services, FedBuff, simulator."""
