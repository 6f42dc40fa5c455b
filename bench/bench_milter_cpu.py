"""Milter-process CPU per message: milterguard against the do-nothing floor milter.

    python3 bench/bench_milter_cpu.py [floor] [mg]

Replays bench_postfix.py's message 1,000 times over a unix socket with the
replay harness (one conversation at a time, no Postfix) and reads the
daemon's own CPU time from /proc, so the figure is what the milter process
spends per message, without Postfix's share or the machine's noise in
throughput. Compare with bench_session.py (the Session alone, no libmilter).
"""
import os, sys, subprocess, time, tempfile
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from milterguard.replay.conversation import replay_message
d=tempfile.mkdtemp()
cfg=os.path.join(d,"c.yaml")
open(cfg,"w").write("rules: {shipped: true, site: [], reload_interval: 0}\nallowlist: {networks: []}\nenvelope: {reject_unknown_sender_domain: false, reject_null_mx: false, reject_unknown_recipient_domain: false}\nhelo: {reject_unknown: false}\nlogging: {level: warning}\n")
sys.path.insert(0, os.path.join(REPO, "bench"))
import bench_postfix
msg=bench_postfix.MESSAGE.encode()
for name in (sys.argv[1:] or ["floor", "mg"]):
    spec=f"unix:{d}/{name}.sock"
    argv=[sys.executable,os.path.join(REPO, "bench", "floor_milter.py"),spec] if name=="floor" else [sys.executable,"-m","milterguard","run","-c",cfg,"--socket",spec,"--state-dir",d+"/st"]
    p=subprocess.Popen(argv,cwd=REPO,stderr=subprocess.DEVNULL)
    while not os.path.exists(f"{d}/{name}.sock"): time.sleep(0.05)
    for i in range(50): replay_message(spec,msg)
    def cpu():
        st=open(f"/proc/{p.pid}/stat").read().rsplit(")",1)[1].split(); return (int(st[11])+int(st[12]))/os.sysconf("SC_CLK_TCK")
    c0=cpu(); n=1000; t=time.time()
    for i in range(n): r=replay_message(spec,msg)
    print(name, r.action, "daemon cpu %.0f us/msg, wall %.0f us/msg"%((cpu()-c0)/n*1e6,(time.time()-t)/n*1e6))
    p.terminate(); p.wait()
import shutil
shutil.rmtree(d, ignore_errors=True)
