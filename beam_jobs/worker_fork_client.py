"""The local runner's worker command (see worker_fork.py): hands this process's environment and
standard streams to the driver's worker server and exits with the forked worker's status. The
standard library only, run with `python -S`: it starts in about 20 ms."""
import json
import os
import socket
import sys

conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect("\0" + sys.argv[1])  # the server's abstract socket
data = json.dumps({"environ": dict(os.environ), "cwd": os.getcwd()}).encode()
message = len(data).to_bytes(8, "big") + data
sent = socket.send_fds(conn, [message], [0, 1, 2])
conn.sendall(message[sent:])
status = conn.recv(1)
sys.exit(status[0] if status else 1)
