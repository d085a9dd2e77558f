(function(){
  /* Filter (category, concept, detectors only), sort (IoU, unit, label, category; click again to
     reverse) and a click-to-enlarge lightbox. The state lives in the URL hash, so a view can be
     bookmarked: #cat=object&q=car&det=1&sort=label-asc&view=grid */
  var box=document.getElementById('units');
  var cat=document.getElementById('cat'),q=document.getElementById('q'),det=document.getElementById('det');
  var count=document.getElementById('count'),empty=document.getElementById('empty');
  var buttons=document.querySelectorAll('.sort button');
  var units=Array.prototype.slice.call(box.querySelectorAll('.unit'));
  var DEFAULT={iou:'desc',unit:'asc',label:'asc',category:'asc'};
  var sort={key:'iou',dir:'desc'};
  function val(u,k){
    if(k==='iou'){return parseFloat(u.getAttribute('data-iou'));}
    if(k==='unit'){return parseInt(u.getAttribute('data-unit'),10);}
    return (u.getAttribute('data-'+k)||'').toLowerCase();
  }
  function cmp(a,b){
    var x=val(a,sort.key),y=val(b,sort.key),r=x<y?-1:x>y?1:0;
    if(sort.dir==='desc'){r=-r;}
    if(r===0){  /* ties: best IoU first, then unit number */
      r=val(b,'iou')-val(a,'iou');if(r===0){r=val(a,'unit')-val(b,'unit');}
    }
    return r;
  }
  function state(){
    var h=[];if(cat.value){h.push('cat='+encodeURIComponent(cat.value));}
    var s=q.value.trim();if(s){h.push('q='+encodeURIComponent(s));}if(det.checked){h.push('det=1');}
    if(sort.key!=='iou'||sort.dir!=='desc'){h.push('sort='+sort.key+'-'+sort.dir);}
    if(typeof view!=='undefined'&&view==='grid'){h.push('view=grid');}
    if(window.history&&history.replaceState){history.replaceState(null,'',h.length?'#'+h.join('&'):location.pathname);}
  }
  function apply(){
    var c=cat.value,s=q.value.trim().toLowerCase(),d=det.checked,n=0;
    units.sort(cmp);
    for(var i=0;i<units.length;i++){
      var u=units[i];box.appendChild(u);
      var text=(u.getAttribute('data-label')+' '+u.getAttribute('data-raw')).toLowerCase();
      var ok=(!c||u.getAttribute('data-category')===c)&&(!s||text.indexOf(s)>=0)&&(!d||u.getAttribute('data-detector')==='1');
      u.hidden=!ok;if(ok){n++;}
    }
    for(var j=0;j<buttons.length;j++){
      var b=buttons[j],on=b.getAttribute('data-sort')===sort.key;
      b.setAttribute('aria-pressed',on?'true':'false');
      if(on){b.setAttribute('data-dir',sort.dir);}else{b.removeAttribute('data-dir');}
    }
    count.textContent=n+' of '+units.length+' units shown';empty.hidden=n>0;state();
  }
  for(var j=0;j<buttons.length;j++){
    buttons[j].addEventListener('click',function(){
      var k=this.getAttribute('data-sort');
      if(sort.key===k){sort.dir=sort.dir==='asc'?'desc':'asc';}else{sort.key=k;sort.dir=DEFAULT[k];}
      apply();
    });
  }
  var p=location.hash.replace(/^#/,'').split('&');
  for(var i=0;i<p.length;i++){var kv=p[i].split('=');var v=decodeURIComponent(kv[1]||'');
    if(kv[0]==='cat'){cat.value=v;}else if(kv[0]==='q'){q.value=v;}else if(kv[0]==='det'){det.checked=v==='1';}
    else if(kv[0]==='sort'){var m=v.split('-');if(DEFAULT[m[0]]&&(m[1]==='asc'||m[1]==='desc')){sort={key:m[0],dir:m[1]};}}}
  cat.addEventListener('change',apply);q.addEventListener('input',apply);det.addEventListener('change',apply);apply();

  /* View: the detailed list (one unit per row) or a dense grid of cards; kept in the hash (view=grid). */
  var views=document.querySelectorAll('.view button'),view='list';
  function setView(v){
    view=v==='grid'?'grid':'list';box.classList.toggle('grid',view==='grid');
    for(var i=0;i<views.length;i++){views[i].setAttribute('aria-pressed',views[i].getAttribute('data-view')===view?'true':'false');}
  }
  for(var i=0;i<views.length;i++){views[i].addEventListener('click',function(){setView(this.getAttribute('data-view'));apply();});}
  for(var i=0;i<p.length;i++){var kv=p[i].split('=');if(kv[0]==='view'){setView(kv[1]);}}
  setView(view);state();

  /* Lightbox: one image of a unit's strip at a time, enlarged to fit the window (the mask outline
     scales with it); arrows step through the unit's images. The enlarged element exists only while
     open: the page's image check never sees an empty one. */
  var lb=document.getElementById('lightbox'),lbcap=document.getElementById('lightbox-caption');
  var frame=document.getElementById('lightbox-frame'),cur=null;
  function tilesOf(img){
    var t=(img.getAttribute('data-tiles')||'').split(',').filter(function(x){return x;});
    if(!t.length){return [[0,img.naturalWidth||parseInt(img.getAttribute('width'),10)]];}
    return t.map(function(x){var a=x.split(':');return [parseInt(a[0],10),parseInt(a[1],10)];});
  }
  function show(strip,k){
    var tiles=tilesOf(strip);k=(k+tiles.length)%tiles.length;cur={strip:strip,k:k,n:tiles.length};
    var sh=parseInt(strip.getAttribute('height'),10),sw=parseInt(strip.getAttribute('width'),10);
    var x=tiles[k][0],w=tiles[k][1];
    var s=Math.min(0.96*window.innerWidth/w,0.8*window.innerHeight/sh);
    var img=document.getElementById('lightbox-img');
    if(!img){img=document.createElement('img');img.id='lightbox-img';frame.appendChild(img);}
    img.src=strip.getAttribute('src');img.alt=strip.alt;
    img.style.width=(sw*s)+'px';img.style.height=(sh*s)+'px';img.style.left=(-x*s)+'px';
    frame.style.width=Math.round(w*s)+'px';frame.style.height=Math.round(sh*s)+'px';
    lbcap.textContent=(strip.getAttribute('data-caption')||strip.alt)+' \u2014 image '+(k+1)+' of '+tiles.length;
    lb.hidden=false;
  }
  function close(){lb.hidden=true;cur=null;var old=document.getElementById('lightbox-img');if(old){old.parentNode.removeChild(old);}}
  box.addEventListener('click',function(e){
    var t=e.target;if(!t||!t.classList||!t.classList.contains('strip')){return;}
    var tiles=tilesOf(t),r=t.getBoundingClientRect(),sw=parseInt(t.getAttribute('width'),10);
    var px=(e.clientX-r.left)*sw/(r.width||sw),k=0;  /* the image clicked on */
    for(var i=0;i<tiles.length;i++){if(px>=tiles[i][0]){k=i;}}
    show(t,k);
  });
  function step(d,e){if(e){e.stopPropagation();}if(cur){show(cur.strip,cur.k+d);}}
  document.getElementById('lightbox-prev').addEventListener('click',function(e){step(-1,e);});
  document.getElementById('lightbox-next').addEventListener('click',function(e){step(1,e);});
  lb.addEventListener('click',close);
  document.addEventListener('keydown',function(e){
    if(lb.hidden){return;}
    if(e.key==='Escape'){close();}else if(e.key==='ArrowRight'){step(1);}else if(e.key==='ArrowLeft'){step(-1);}
  });
})();
