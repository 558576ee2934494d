# /etc/profile.d/venv.sh in the Python service images: a login shell (`bash -lc`, as KubeRay
# starts `ray start`) resets PATH in /etc/profile, then reads this; the venv's commands stay
# first.
export PATH="/opt/venv/bin:$PATH"
